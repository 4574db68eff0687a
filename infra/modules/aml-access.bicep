// Access to the existing Azure ML workspace (deployed into the workspace's resource group):
// - the dispatch app's identity (the only app that trains and deploys) as AzureML Data Scientist on the
//   workspace, the narrowest scope for Azure ML roles (submit and read jobs, register data assets and models,
//   update the online endpoint's deployment; it cannot create compute or change the workspace);
// - an identity-based datastore on the loop's items container, so that training reads items by datastore URI
//   (labeling is Label Studio's, outside the workspace: no labeling datastore);
// - the training compute cluster training/job.yml runs on: scales to zero, runs as its own user-assigned
//   identity, which reads the items datastore and the manifests (Storage Blob Data Reader on those two
//   containers, storage-roles.bicep): the datastore holds no credential, so the job reads with that identity;
// - AzureML Data Scientist for the training workflow's identity (GitHub OIDC, github-identity.bicep).

param workspaceName string
@description('Principal id of the dispatch app\'s identity.')
param dispatchPrincipalId string

@description('Loop storage account and container the items datastore points at.')
param storageAccountName string
param itemsContainer string

@description('Datastore name; empty: do not create the datastore.')
param itemsDatastoreName string = ''

@description('Principal id of the training workflow\'s identity (GitHub OIDC); empty: no grant.')
param workflowPrincipalId string = ''

@description('The training compute cluster (AmlCompute) and the user-assigned identity it runs as.')
param computeName string
param computeIdentityId string
param computeVmSize string = 'Standard_DS3_v2'
@minValue(1)
param computeMaxNodes int = 1

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

var azureMLDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'

resource dataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, dispatchPrincipalId, azureMLDataScientist)
  properties: {
    principalId: dispatchPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
  }
}

// The training workflow submits the job, follows it and registers the model it produced.
resource workflowDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(workflowPrincipalId)) {
  scope: workspace
  name: guid(workspace.id, workflowPrincipalId, azureMLDataScientist)
  properties: {
    principalId: workflowPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
  }
}

resource itemsDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = if (!empty(itemsDatastoreName)) {
  parent: workspace
  name: empty(itemsDatastoreName) ? 'unused-items' : itemsDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: itemsContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: { credentialsType: 'None' }
    description: 'Active-learning loop: content-addressed items (scoring_collector)'
  }
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = {
  parent: workspace
  name: computeName
  location: workspace.location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${computeIdentityId}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'Active-learning loop: retraining (training/job.yml)'
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      scaleSettings: {
        minNodeCount: 0 // nothing runs, nothing is billed, between retrainings
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
      remoteLoginPortPublicAccess: 'Disabled'
    }
  }
}

output workspacePrincipalId string = workspace.identity.principalId
output computeName string = compute.name
