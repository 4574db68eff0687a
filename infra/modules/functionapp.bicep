// One function app on its own Flex Consumption plan, running the one Python package with the stage
// named in its AL_STAGES app setting. Identity-based everywhere: the host storage, the deployment
// package container, Key Vault references and Application Insights all use the user-assigned identity.

param name string
param location string
param tags object = {}

@description('The stage this app hosts (azd deploys the same package to each app; the service name tags it).')
param stage string
param azdServiceName string

param identityId string
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsConnectionString string

@description('The stage\'s AL_* settings (built in main.bicep).')
param appSettings object

param pythonVersion string = '3.11'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 40

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Platform settings (not read by the package's Settings; consumed by the Functions host, azure-identity
// and the OpenTelemetry distro).
var platformSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // DefaultAzureCredential picks the user-assigned identity by this client id.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Python worker: send the worker's logs and traces through OpenTelemetry (azure-monitor-opentelemetry).
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': azdServiceName, 'al-stage': stage })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references (AL_GITHUB_TOKEN) resolve with the user-assigned identity, not a system one.
    keyVaultReferenceIdentity: identityId
    // No ftpsState (nor linuxFxVersion & co.): site properties Flex Consumption does not support; the
    // runtime and the scale live in functionAppConfig below.
    siteConfig: { minTlsVersion: '1.2' }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: pythonVersion }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(platformSettings, appSettings)
  }
}

output name string = app.name
output hostName string = app.properties.defaultHostName
